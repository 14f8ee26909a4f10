{
  description = "agentbox: an isolated, persistent sandbox shell for the project in the current directory";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # The development shell: the interpreter and the tools the nox sessions drive.
      # Packages and the image build get their own outputs in a later release.
      devShells = forAll (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.python311
            pkgs.nox
            pkgs.uv
            pkgs.ruff
            pkgs.podman
            pkgs.buildah
            pkgs.fuse-overlayfs
            pkgs.btrfs-progs
          ];
        };
      });
    };
}
