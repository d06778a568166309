//! MCP client helpers (filled in with the MCP tests).
