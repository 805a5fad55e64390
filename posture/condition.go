package posture

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/interpreter"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Limits on an AccessPolicy's when condition.
const (
	// MaxConditionLength bounds the text of a when expression, in bytes.
	MaxConditionLength = 2048
	// ConditionCostLimit bounds the cost of evaluating a when expression,
	// in CEL cost units (roughly one per operation, more for string and
	// list work in proportion to the sizes involved). The loader refuses an
	// expression whose estimated worst case exceeds it, and evaluation
	// stops there, denying with ReasonConditionError.
	ConditionCostLimit = 10000
	// ConditionRecheck bounds how long a decision whose when reads now
	// holds: live sessions on the route are judged again at least this
	// often, so one admitted inside business hours ends soon after they do.
	ConditionRecheck = time.Minute
)

// The variables a when expression sees, with their types. Strings a request
// does not fill are empty, booleans false. The device variables come from
// a posture token whose signature, subject and key binding verified, on an
// inbound route with a postureProfile; elsewhere they are all empty and
// device.present is false.
var conditionVars = []struct {
	name string
	typ  *cel.Type
	// max is the largest size the variable can have (bytes of a string),
	// for the cost estimate; zero for fixed-size values.
	max uint64
}{
	{"peer.id", cel.StringType, 2048},
	{"peer.trust_domain", cel.StringType, 255},
	{"peer.path", cel.StringType, 2048},
	{"peer.jurisdiction", cel.StringType, 16},
	{"local.id", cel.StringType, 2048},
	{"local.trust_domain", cel.StringType, 255},
	{"local.jurisdiction", cel.StringType, 16},
	{"route.name", cel.StringType, 128},
	{"route.direction", cel.StringType, 8},
	{"route.data_class", cel.StringType, 64},
	{"device.present", cel.BoolType, 0},
	{"device.issuer", cel.StringType, MaxTokenSize},
	{"device.device_id", cel.StringType, MaxTokenSize},
	{"device.os_name", cel.StringType, MaxTokenSize},
	{"device.os_version", cel.StringType, MaxTokenSize},
	{"device.kernel", cel.StringType, MaxTokenSize},
	{"device.disk_encrypted", cel.BoolType, 0},
	{"device.firewall", cel.BoolType, 0},
	{"device.screen_lock", cel.BoolType, 0},
	{"device.edr_running", cel.BoolType, 0},
	{"device.edr_name", cel.StringType, MaxTokenSize},
	{"now", cel.TimestampType, 0},
}

// conditionEnv is the CEL environment every when expression is compiled
// in: the standard library and the variables above, nothing else.
var conditionEnv = sync.OnceValues(func() (*cel.Env, error) {
	opts := []cel.EnvOption{
		cel.ParserExpressionSizeLimit(MaxConditionLength),
		cel.ParserRecursionLimit(48),
		cel.ExpressionNodeLimit(1000),
	}
	for _, v := range conditionVars {
		opts = append(opts, cel.Variable(v.name, v.typ))
	}
	return cel.NewEnv(opts...)
})

// sizes gives the cost estimator the bounds of the variables.
type sizes struct{}

func (sizes) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

func (sizes) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	p := n.Path()
	if len(p) != 1 {
		return nil
	}
	for _, v := range conditionVars {
		if v.name == p[0] && v.max > 0 {
			s := cost.RangedSizeEstimate(0, v.max)
			return &s
		}
	}
	return nil
}

// condition is a compiled when expression. It is safe for concurrent use.
type condition struct {
	prg cel.Program
	// readsNow is set when the expression refers to now: its result
	// changes with time alone.
	readsNow bool
}

// conditionIssue is one problem with a when expression; line and column
// are 1-based, within the expression.
type conditionIssue struct {
	line, col int
	msg       string
}

// compileCondition type-checks src, requires a bool result and a bounded
// cost, and prepares it for evaluation.
func compileCondition(src string) (*condition, []conditionIssue) {
	if len(src) > MaxConditionLength {
		return nil, []conditionIssue{{msg: fmt.Sprintf("%d bytes long; a when expression may have at most %d", len(src), MaxConditionLength)}}
	}
	env, err := conditionEnv()
	if err != nil {
		return nil, []conditionIssue{{msg: "condition environment: " + err.Error()}}
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		var out []conditionIssue
		for _, e := range iss.Errors() {
			ci := conditionIssue{msg: e.Message}
			if e.Location != nil && e.Location.Line() > 0 {
				ci.line, ci.col = e.Location.Line(), e.Location.Column()+1
			}
			out = append(out, ci)
		}
		return nil, out
	}
	if t := ast.OutputType(); !t.IsExactType(cel.BoolType) {
		return nil, []conditionIssue{{msg: fmt.Sprintf("want a bool expression, got %s", t)}}
	}
	est, err := env.EstimateCost(ast, sizes{})
	if err != nil {
		return nil, []conditionIssue{{msg: "cannot estimate cost: " + err.Error()}}
	}
	if est.Max > ConditionCostLimit {
		worst := "unbounded"
		if est.Max != ^uint64(0) {
			worst = strconv.FormatUint(est.Max, 10)
		}
		return nil, []conditionIssue{{msg: fmt.Sprintf("too costly: the worst case is estimated at %s, the limit is %d (bound lists and strings, avoid nested loops and regular expressions built at run time)", worst, ConditionCostLimit)}}
	}
	prg, err := env.Program(ast, cel.CostLimit(ConditionCostLimit))
	if err != nil {
		return nil, []conditionIssue{{msg: err.Error()}}
	}
	c := &condition{prg: prg}
	for _, ref := range ast.NativeRep().ReferenceMap() {
		if ref.Name == "now" {
			c.readsNow = true
		}
	}
	return c, nil
}

// errConditionResult is the error of an expression that did not yield a
// bool, which the type check should have made impossible.
var errConditionResult = errors.New("posture: condition did not evaluate to a bool")

// eval runs the condition. Any failure, a panic included, is an error:
// the caller denies.
func (c *condition) eval(in *conditionInput) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, fmt.Errorf("posture: condition panicked: %v", r)
		}
	}()
	out, _, err := c.prg.Eval(in)
	if err != nil {
		return false, err
	}
	b, isBool := out.Value().(bool)
	if !isBool {
		return false, errConditionResult
	}
	return b, nil
}

// conditionInput holds the variables of one evaluation. It implements
// interpreter.Activation without building a map per request.
type conditionInput struct {
	peer, local       spiffeid.ID
	peerJur, localJur string
	route             *Route
	claims            *Claims
	now               time.Time
}

var _ interpreter.Activation = (*conditionInput)(nil)

func (in *conditionInput) Parent() interpreter.Activation { return nil }

func (in *conditionInput) ResolveName(name string) (any, bool) {
	switch name {
	case "peer.id":
		return idString(in.peer), true
	case "peer.trust_domain":
		return in.peer.TrustDomain().Name(), true
	case "peer.path":
		return in.peer.Path(), true
	case "peer.jurisdiction":
		return in.peerJur, true
	case "local.id":
		return idString(in.local), true
	case "local.trust_domain":
		return in.local.TrustDomain().Name(), true
	case "local.jurisdiction":
		return in.localJur, true
	case "route.name":
		return in.route.Name, true
	case "route.direction":
		return in.route.Direction.String(), true
	case "route.data_class":
		return in.route.DataClass, true
	case "now":
		return in.now, true
	}
	if d, ok := strings.CutPrefix(name, "device."); ok {
		return in.device(d)
	}
	return nil, false
}

func idString(id spiffeid.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

func (in *conditionInput) device(field string) (any, bool) {
	c := in.claims
	if c == nil {
		c = &Claims{}
	}
	flag := func(b *bool) bool { return b != nil && *b }
	switch field {
	case "present":
		return in.claims != nil, true
	case "issuer":
		return c.Issuer, true
	case "device_id":
		return c.DeviceID, true
	case "os_name":
		if c.OS == nil {
			return "", true
		}
		return c.OS.Name, true
	case "os_version":
		if c.OS == nil {
			return "", true
		}
		return c.OS.Version, true
	case "kernel":
		return c.Kernel, true
	case "disk_encrypted":
		return flag(c.DiskEncrypted), true
	case "firewall":
		return flag(c.Firewall), true
	case "screen_lock":
		return flag(c.ScreenLock), true
	case "edr_running":
		return c.EDR != nil && c.EDR.Running, true
	case "edr_name":
		if c.EDR == nil {
			return "", true
		}
		return c.EDR.Name, true
	}
	return nil, false
}
