"""mura_core: musculoskeletal radiograph screening (MURA method) as a library."""
