"""HTTP servers: the node (ollama + OpenAI APIs) and the router (load balancer)."""
