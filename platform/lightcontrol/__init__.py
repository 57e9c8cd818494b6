"""lightcontrol: the reference smart-light app hosting plug-ins through hostwire."""
