"""Generated from proto/parley/v1 by clients/python/scripts/generate.sh. Do not edit."""
