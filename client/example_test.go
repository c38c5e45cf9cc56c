package client_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"time"

	"github.com/hotpatch/hotpatch/client"
	"github.com/hotpatch/hotpatch/server/api"
)

// An operator publishes a patch and rolls it out to the canary ring, then
// to the rest of the fleet.
func Example() {
	ca, err := os.ReadFile("/var/lib/hotpatch-server/ca.pem")
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New("https://patches.example.com:8443", ca, client.WithToken(os.Getenv("HOTPATCH_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	file, err := os.ReadFile("ledger-memo.hpatch")
	if err != nil {
		log.Fatal(err)
	}
	p, err := c.Publish(ctx, file)
	if client.IsStatus(err, http.StatusForbidden) {
		log.Fatal("publishing needs an operator token: ", err)
	} else if err != nil {
		log.Fatal(err)
	}
	r, err := c.StartRollout(ctx, api.RolloutRequest{Patch: p.SHA256, Rings: []string{"canary", "broad"}, Soak: 10 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("rollout", r.ID, r.State)
}
