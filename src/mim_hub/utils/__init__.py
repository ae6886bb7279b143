"""Small helpers every floor may import (they import nothing of mim_hub)."""
