// hotpatch dashboard: live updates and confirmations, on top of pages
// that work without this script. No framework, no build step.
//
// - Signed-in pages listen to /ui/stream (server-sent
//   events); on "change" they fetch their own URL again with the
//   X-Hotpatch-Fragment header and swap the parts marked data-live, by id,
//   in place: no page reload, focus and scroll kept.
// - Forms with data-confirm ask in a modal <dialog> first; confirmed, they
//   are sent with fetch and the answer replaces the main part.
'use strict';
(() => {
  const FRAGMENT = { 'X-Hotpatch-Fragment': '1' };
  const main = () => document.getElementById('main');
  const status = document.getElementById('live-status');
  const setStatus = (text, state) => {
    if (!status) return;
    if (status.textContent !== text) status.textContent = text;
    status.dataset.state = state;
  };

  const parse = (html) => {
    const t = document.createElement('template');
    t.innerHTML = html;
    return t.content;
  };

  const applyTitle = (resp) => {
    const t = resp.headers.get('X-Hotpatch-Title');
    if (t) document.title = decodeURIComponent(t);
  };

  // swapLive replaces each live part of the page by the one of the same
  // id in the fresh fragment; if the page's parts changed shape, the
  // whole main part.
  const swapLive = (frag) => {
    const fresh = frag.querySelectorAll('[data-live][id]');
    const olds = main().querySelectorAll('[data-live][id]');
    if (fresh.length !== olds.length || [...fresh].some((n, i) => n.id !== olds[i].id)) {
      swapMain(frag, false);
      return;
    }
    const active = document.activeElement;
    const focusID = active && active.id && main().contains(active) ? active.id : '';
    fresh.forEach((n) => {
      const old = document.getElementById(n.id);
      if (old && !old.isEqualNode(n)) old.replaceWith(n);
    });
    if (focusID && document.activeElement !== document.getElementById(focusID)) {
      const again = document.getElementById(focusID);
      if (again) again.focus({ preventScroll: true });
    }
  };

  const swapMain = (frag, moveFocus) => {
    main().replaceChildren(frag);
    if (moveFocus) {
      const target = main().querySelector('[role=alert], [role=status], h1');
      (target || main()).setAttribute('tabindex', '-1');
      (target || main()).focus();
    }
  };

  // refresh fetches this page's main part again; one at a time, and one
  // more if changes came in meanwhile.
  let busy = false, again = false;
  const refresh = async () => {
    if (!main().querySelector('[data-live][id]')) return; // nothing live here (a form)
    if (busy) { again = true; return; }
    busy = true;
    try {
      const resp = await fetch(location.href, { headers: FRAGMENT, credentials: 'same-origin', cache: 'no-store' });
      if (resp.status === 401) { location.assign('/ui/signin?next=' + encodeURIComponent(location.pathname + location.search)); return; }
      if (!resp.ok) return;
      applyTitle(resp);
      swapLive(parse(await resp.text()));
      document.dispatchEvent(new CustomEvent('hotpatch:updated'));
    } catch (e) {
      setStatus('Offline: retrying…', 'error');
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  };

  const listen = () => {
    if (!status || !window.EventSource) return; // signed out, or an old browser
    setStatus('Connecting…', 'connecting');
    const es = new EventSource('/ui/stream');
    es.addEventListener('hello', () => { setStatus('Live', 'live'); refresh(); });
    es.addEventListener('change', refresh);
    es.addEventListener('signout', () => { es.close(); location.assign('/ui/signin'); });
    es.onerror = () => {
      // Closed for good: the server answered but refused (signed out, a
      // session that expired); a reload shows why. Otherwise the browser
      // reconnects by itself.
      if (es.readyState === EventSource.CLOSED) { location.reload(); return; }
      setStatus('Reconnecting…', 'error');
    };
    window.addEventListener('pagehide', () => es.close());
  };

  // Confirmation dialog for forms that act.
  const dialog = document.getElementById('confirm-dialog');
  const ask = (form) => new Promise((resolve) => {
    if (!dialog || !dialog.showModal) { resolve(window.confirm(form.dataset.confirm)); return; }
    document.getElementById('confirm-title').textContent = form.dataset.confirm;
    document.getElementById('confirm-detail').textContent = form.dataset.detail || '';
    document.getElementById('confirm-ok').textContent = form.dataset.button || 'Confirm';
    dialog.returnValue = 'cancel';
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
    dialog.showModal();
  });

  // send posts a form with fetch and shows the answer (after a redirect,
  // the page it leads to) in place.
  const send = async (form, extra) => {
    const body = new URLSearchParams(new FormData(form));
    for (const [k, v] of Object.entries(extra || {})) body.set(k, v);
    const buttons = form.querySelectorAll('button');
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const resp = await fetch(form.action, { method: 'POST', body, headers: FRAGMENT, credentials: 'same-origin' });
      if (resp.status === 401) { location.assign('/ui/signin'); return; }
      applyTitle(resp);
      const frag = parse(await resp.text());
      if (resp.redirected && resp.url !== location.href) history.pushState(null, '', resp.url);
      swapMain(frag, true);
      document.dispatchEvent(new CustomEvent('hotpatch:updated'));
    } catch (e) {
      form.submit(); // let the browser try the plain way
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  };

  document.addEventListener('submit', async (ev) => {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== 'post') return;
    if (form.action.endsWith('/ui/signout') || form.action.endsWith('/ui/signin')) return;
    ev.preventDefault();
    if (form.dataset.confirm) {
      if (!(await ask(form))) return;
      send(form, { confirm: 'yes' });
      return;
    }
    send(form);
  });

  window.addEventListener('popstate', () => location.reload());
  listen();
})();
