package subscription

import (
	"fmt"
	"sync"

	"github.com/google/cel-go/cel"

	"github.com/switchyard-proxy/switchyard/config"
)

// celEnv is the CEL environment of routing rules: one variable, event, the
// CloudEvent as a map (event.type, event.data.amount ...), as in Dapr.
var celEnv = sync.OnceValues(func() (*cel.Env, error) {
	return cel.NewEnv(cel.Variable("event", cel.MapType(cel.StringType, cel.DynType)))
})

// rule is one compiled routing rule.
type rule struct {
	match string
	path  []byte
	prg   cel.Program
}

// routes are a subscription's compiled routing: rules in order, then the
// default path.
type routes struct {
	rules []rule
	def   []byte // default path; nil: an event no rule matches is dropped
}

// compileRoutes compiles the rules of a subscription once. A rule with an
// empty match is the default route (Dapr's v2alpha1 allows it).
func compileRoutes(def string, rs []config.SubscriptionRule) (routes, error) {
	out := routes{}
	if def != "" {
		out.def = []byte(normPath(def))
	}
	for i, r := range rs {
		if r.Path == "" {
			return routes{}, fmt.Errorf("subscription: rules[%d]: path is required", i)
		}
		if r.Match == "" {
			if out.def == nil {
				out.def = []byte(normPath(r.Path))
			}
			continue
		}
		env, err := celEnv()
		if err != nil {
			return routes{}, fmt.Errorf("subscription: cel: %w", err)
		}
		ast, iss := env.Compile(r.Match)
		if iss != nil && iss.Err() != nil {
			return routes{}, fmt.Errorf("subscription: rules[%d]: match %q: %w", i, r.Match, iss.Err())
		}
		if ast.OutputType() != cel.BoolType {
			return routes{}, fmt.Errorf("subscription: rules[%d]: match %q is not a boolean expression (%v)", i, r.Match, ast.OutputType())
		}
		prg, err := env.Program(ast)
		if err != nil {
			return routes{}, fmt.Errorf("subscription: rules[%d]: match %q: %w", i, r.Match, err)
		}
		out.rules = append(out.rules, rule{match: r.Match, path: []byte(normPath(r.Path)), prg: prg})
	}
	if out.def == nil && len(out.rules) == 0 {
		return routes{}, fmt.Errorf("subscription: no route: set route or rules")
	}
	return out, nil
}

// pick returns the path for an event: the first rule whose match is true,
// else the default. fields is the event as CEL sees it (nil when there are
// no rules). An evaluation error skips the rule.
func (r *routes) pick(fields map[string]any) []byte {
	if len(r.rules) > 0 && fields != nil {
		act := map[string]any{"event": fields}
		for i := range r.rules {
			out, _, err := r.rules[i].prg.Eval(act)
			if err != nil {
				continue
			}
			if b, ok := out.Value().(bool); ok && b {
				return r.rules[i].path
			}
		}
	}
	return r.def
}

func normPath(p string) string {
	if p == "" || p[0] == '/' {
		return p
	}
	return "/" + p
}
