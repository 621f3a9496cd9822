"""How the world calls inferline: one module per wire protocol, each with one factory."""
