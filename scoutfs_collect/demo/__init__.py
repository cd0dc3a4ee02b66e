"""The simulated scoutfs sysfs tree the demo profile runs against (the module cannot be
loaded everywhere); tests build their fixtures from it too."""
