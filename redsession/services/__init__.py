"""The long-running processes and what runs them: the worker and its leader lock, the embedded
Redis server, `redsession up`, and the MCP server with its bearer-token auth."""
