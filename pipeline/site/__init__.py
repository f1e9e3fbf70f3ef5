"""The catalog website: static pages rendered from the store's catalog records with jinja2.

- :mod:`.catalog`: what the site knows about each model (record, models.yaml, last failure)
- :mod:`.card`: model cards, sanitized; summaries and search words
- :mod:`.snippets`: the copyable Dockerfile, Kubernetes and CLI snippets
- :mod:`.numbers`: sizes, counts and the size picture
- :mod:`.assets`: static files under content-hashed names
- :mod:`.render`: entries in, ``{path: bytes}`` out (pure)
- :mod:`.output`: read the store, write the site (incrementally) into it and into a directory

Templates and assets live in the repository's top-level ``site/`` folder (not a Python package).

Example::

    from pipeline.site.output import publish_site
    print(publish_site(open_store("store"), load_models("models/models.yaml"), SiteOptions()).summary())
"""
