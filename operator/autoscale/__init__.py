"""Autoscaling with scale to zero (docs/autoscaling.md): the parameters the operator hands to the node (params),
the decision rule (policy), the replicas' gauges (gauges), the loop that applies decisions (scaler) and the
activator that answers a deployment's endpoint while no replica runs (activator)."""
