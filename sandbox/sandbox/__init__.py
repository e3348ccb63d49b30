"""Local emulators of the Braze REST API and the Lytics API."""
