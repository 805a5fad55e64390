package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// testReplicas runs two stores on one database, as two control-plane
// replicas would, with sidecars that reconnect to the other replica and
// resend what was not acknowledged.
func testReplicas(t *testing.T, url string) {
	ctx := context.Background()
	key := testKey("k")
	r1 := openStore(t, url, key, 25)
	r2 := openStore(t, url, key, 25)
	const sidecars, batches, per = 4, 8, 10
	var wg sync.WaitGroup
	for w := range sidecars {
		wg.Go(func() {
			src := fmt.Sprintf("spiffe://hospital.example/sidecar/%d", w)
			for i := range batches {
				batch := events(src, 1+i*per, per)
				// Sent to one replica, then resent to the other.
				for _, r := range []Store{r1, r2}[:1+i%2] {
					if err := r.Append(ctx, batch); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	mustClose(t, r1)
	mustClose(t, r2)
	ro := reopenRO(t, url)
	rep, err := Verify(ctx, ro, PublicKey(key))
	if err != nil || !rep.OK() || rep.Head != sidecars*batches*per || rep.Signed != rep.Head {
		t.Errorf("Verify = %+v, %v; want OK, head %d, all signed", rep, err, sidecars*batches*per)
	}
	for w := range sidecars {
		if hw, _ := ro.HighWater(ctx, fmt.Sprintf("spiffe://hospital.example/sidecar/%d", w)); hw != batches*per {
			t.Errorf("sidecar %d HighWater = %d, want %d", w, hw, batches*per)
		}
	}
}
