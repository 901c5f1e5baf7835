"""Articles from the site: its RSS or Atom feed, read into the article model (the
reading itself is ``emails.feeds``, framework-free)."""
