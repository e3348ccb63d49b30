"""Singer tap for Lytics audiences and their members (Meltano SDK)."""
