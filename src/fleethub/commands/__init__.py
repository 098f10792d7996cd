"""Operator commands to robots."""
