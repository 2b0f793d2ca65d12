"""Developer tools: tiny random models for tests and the CPU demo."""
