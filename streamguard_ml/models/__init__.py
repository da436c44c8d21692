"""The two networks (nothing else: data handling and training live elsewhere)."""
