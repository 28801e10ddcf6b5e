"""
Glimpse's HTTP API: a twisted.web resource tree.
"""
