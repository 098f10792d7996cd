"""Live state: the latest state and presence of every robot."""
