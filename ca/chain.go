package ca

// Step is one named check of a policy chain over requests of type R; Fn
// returns a *DenyError (or another error) or nil. The node policy
// (NodePolicy, over *Request) and the Kubernetes front door's own checks
// (kube.KubePolicy, over *kube.Request) are both chains of Steps, run by
// Evaluate: one runner, whichever door a request came through.
type Step[R any] struct {
	Name string
	Fn   func(R) error
}

// Evaluate runs the checks in order and returns the first denial.
func Evaluate[R any](checks []Step[R], r R) error {
	for _, c := range checks {
		if err := c.Fn(r); err != nil {
			return err
		}
	}
	return nil
}
