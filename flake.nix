{
  description = "agentbox: an isolated, persistent sandbox shell for the project in the current directory";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      lib = nixpkgs.lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Everything below is read from the packages' own files: their names, versions and
      # dependencies are said once, in packages/*/pyproject.toml and each __init__.py.
      dirs = builtins.attrNames (lib.filterAttrs (_: kind: kind == "directory")
        (builtins.readDir ./packages));
      project = dir: (builtins.fromTOML
        (builtins.readFile (./packages + "/${dir}/pyproject.toml"))).project;
      module = dir: builtins.replaceStrings [ "-" ] [ "_" ] dir;
      # hatch's dynamic version: the one `__version__ = "..."` line of the package's __init__
      versionOf = dir: builtins.head (builtins.match ''.*__version__ = "([^"]*)".*''
        (builtins.readFile (./packages + "/${dir}/src/${module dir}/__init__.py")));
      nameOf = requirement: builtins.head (builtins.match "([A-Za-z0-9._-]+).*" requirement);
      # requirements only older Pythons need (nixpkgs' Python is newer than 3.11)
      forThisPython = requirement:
        builtins.match ".*python_version *< *.3\\.11.*" requirement == null;

      pythonPackagesFor = pkgs:
        let
          py = pkgs.python311Packages;
          ours = lib.genAttrs dirs (dir:
            let p = project dir; in
            py.buildPythonPackage {
              pname = p.name;
              version = versionOf dir;
              pyproject = true;
              src = ./packages + "/${dir}";
              build-system = [ py.hatchling ];
              # siblings from this flake, the rest from nixpkgs, whose attributes are the PyPI
              # names in lower case (PyYAML is pyyaml)
              dependencies = map (name: ours.${name} or py.${lib.toLower name})
                (map nameOf (builtins.filter forThisPython (p.dependencies or [ ])));
              pythonImportsCheck = [ (module dir) ];
              meta.description = p.description;
            });
        in
        ours;
    in
    {
      # One package per Python package (agentbox-state ... agentbox-cli, loftd); `default` is
      # the agentbox command line. They run the host's podman, buildah, btrfs-progs and
      # fuse-overlayfs from PATH, as the pip-installed commands do.
      packages = forAll (pkgs: pythonPackagesFor pkgs // {
        default = (pythonPackagesFor pkgs).agentbox-cli;
      });

      apps = lib.genAttrs systems (system:
        let ours = self.packages.${system}; in {
          agentbox = { type = "app"; program = "${ours.agentbox-cli}/bin/agentbox"; };
          loftd = { type = "app"; program = "${ours.loftd}/bin/loftd"; };
          default = self.apps.${system}.agentbox;
        });

      # The development shell: the interpreter and the tools the nox sessions drive.
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
