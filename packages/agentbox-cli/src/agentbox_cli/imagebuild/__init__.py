"""``agentbox image build``: the agentbox image from a debootstrap base, with Buildah only."""
