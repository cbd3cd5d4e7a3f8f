"""meap-bench: does a MEAP checkpoint beat its NTP twin, and where?"""

__version__ = "0.1.0"
