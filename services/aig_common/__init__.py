"""Small pieces shared by every aig service: OpenAI-shaped errors, JSON, ids, env config."""
