package keepalive

import "testing"

type step struct {
	reads   uint64
	waiting bool
}

func TestStep(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
		want  []Action
	}{
		{"a silent peer with calls waiting: PING, then give up",
			[]step{{1, true}, {1, true}, {1, true}}, []Action{None, Ping, GiveUp}},
		{"an answer to the PING starts over",
			[]step{{1, true}, {1, true}, {2, true}, {2, true}, {2, true}}, []Action{None, Ping, None, Ping, GiveUp}},
		{"no calls waiting: no PING",
			[]step{{1, false}, {1, false}, {1, false}}, []Action{None, None, None}},
		{"an unanswered PING ends the connection even when the calls ended meanwhile",
			[]step{{1, true}, {1, true}, {1, false}}, []Action{None, Ping, GiveUp}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var k Check
			for i, s := range tc.steps {
				if got := k.Step(s.reads, s.waiting); got != tc.want[i] {
					t.Fatalf("step %d: %v, want %v", i, got, tc.want[i])
				}
			}
		})
	}
}
