"""nbflow tasks for climate data in NetCDF files (registered as ``xarray.*``)."""

__version__ = "0.1.0"
