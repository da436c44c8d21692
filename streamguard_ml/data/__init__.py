"""Package data: the node-type vocabulary and the taint rule table."""
