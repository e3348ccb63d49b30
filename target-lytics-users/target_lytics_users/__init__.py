"""Singer target loading user records into a Lytics stream through the collect API (Meltano SDK)."""
