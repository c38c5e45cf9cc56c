// Package packaging holds what installs hotpatch on a host: the systemd
// units (hotpatchd.service, hotpatch-server.service), the agent's default
// config (hotpatchd.yaml), the nfpm recipe for the .deb and .rpm packages
// (nfpm.yaml) and their maintainer scripts (scripts/).
//
// It has no Go code of its own, only tests that check these files as a user
// gets them:
//
//	packaging/*.service ──parse──▶ capability set, sandbox (ProtectSystem,
//	                               ReadWritePaths, PrivateTmp, User, …)
//	        │                                   │
//	        ▼                                   ▼
//	TestAgentUnit: hotpatchd started with the unit's ExecStart under exactly
//	that sandbox (setpriv + a private mount namespace) patches a process
//	the test started.
//
//	make package ──▶ dist/hotpatch_*.deb ──dpkg -i──▶ this machine
//	        │
//	        ▼
//	TestDebPackage: files and permissions as installed, then both units'
//	ExecStart lines under their sandboxes: the agent enrolls with the
//	server and patches a process the test started; dpkg --purge leaves
//	the machine as it was.
//
// systemd does not run as PID 1 where the tests run, so the tests apply
// the unit's settings themselves (see sandbox_test.go for which settings
// and how); systemd-analyze verify checks the units' syntax where it is
// installed.
package packaging
