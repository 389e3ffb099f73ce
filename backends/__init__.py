"""Backend families (one subpackage each) and the chip profiles (profiles/*.yaml)."""
