"""Provider adapters: one module per upstream protocol."""
