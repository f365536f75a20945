"""
Operations: settings, the twistd plugin's options, the service tree and its
drain, workers, metrics, stats and the request log.
"""
