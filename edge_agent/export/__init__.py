"""Building, exporting and quantizing models; needs the ``export`` extra (torch, optimum)."""
