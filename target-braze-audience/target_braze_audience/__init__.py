"""Singer target writing audience membership to Braze as add/remove deltas (Meltano SDK)."""
