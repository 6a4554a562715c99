"""One module per KD method's term; import a term from its module (``terms.fgd.FGDTerm``)."""
