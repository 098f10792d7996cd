"""The operator live stream: states and events fanned out to dashboards."""
