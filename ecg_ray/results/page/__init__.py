"""What a person reads: the figures, the HTML page and the terminal tables.

    figures   the report's PNG figures (matplotlib, headless)
    webpage   index.html: one self-contained page with how every number was made
    console   the ranked tables as a terminal shows them
"""
