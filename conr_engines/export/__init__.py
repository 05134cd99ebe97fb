"""What every exported engine shares: the graphs of one CoNR step, the verified cache folder, to_static's files."""
