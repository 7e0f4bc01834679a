"""Image writing: skeleton + nix closure -> squashfs -> deterministic SIF.

``skeleton`` lists the non-store entries, ``squashfs`` streams closure and skeleton into
mksquashfs, ``sif`` wraps the squashfs (partition first, at ``PARTITION_OFFSET``) and
reads an image's header and metadata back, ``metadata`` is what an image says about
itself. (No re-exports: importing the package stays free for the CLI's start-up.)
"""
