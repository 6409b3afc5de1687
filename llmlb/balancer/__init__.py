"""The load balancer: policy, registry, proxy, and the node-side router link."""
