"""One edge device: task streams, backbones, rehearsal methods, SparCL and accounting (torch only)."""
