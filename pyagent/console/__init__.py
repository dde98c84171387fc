"""The web console for the humans in the loop: pages, the JSON API and Slack's endpoint."""
