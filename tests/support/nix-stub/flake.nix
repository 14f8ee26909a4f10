{
  # A stand-in for nixpkgs with just what agentbox's flake.nix evaluates, so `nox -s flake` can
  # check the flake where nixpkgs cannot be fetched: `--override-input nixpkgs` points here.
  # Its derivations are never built (their builder fails on purpose); buildPythonPackage
  # records what it was given (pname, version, dependencies...) for the session to compare with
  # the pyprojects. This checks evaluation only: not that nixpkgs' real builds succeed.
  description = "evaluation-only stand-in for nixpkgs (agentbox's flake check)";

  outputs = { self }:
    let
      lib = {
        genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
        filterAttrs = pred: set: builtins.removeAttrs set
          (builtins.filter (name: !(pred name set.${name})) (builtins.attrNames set));
        toLower = builtins.replaceStrings
          (builtins.genList (i: builtins.substring i 1 "ABCDEFGHIJKLMNOPQRSTUVWXYZ") 26)
          (builtins.genList (i: builtins.substring i 1 "abcdefghijklmnopqrstuvwxyz") 26);
      };
      stub = system: name: derivation {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" "echo 'nix-stub: evaluation only, nothing is built' >&2; exit 1" ];
      };
      pkgsFor = system:
        let
          tool = stub system;
          python = name: tool name // { pname = name; };
        in
        {
          python311 = tool "python3.11";
          python311Packages = lib.genAttrs
            [ "hatchling" "podman" "dataclasses-json" "typing-extensions" "platformdirs" "tomli" "pyyaml"
              "uvloop" ]
            python // {
            buildPythonPackage = a:
              assert a.pyproject;
              assert builtins.pathExists (a.src + "/pyproject.toml");
              tool "python3.11-${a.pname}-${a.version}" // {
                inherit (a) pname version pythonImportsCheck;
                inherit (a.meta) description;
                dependencyNames = map (d: d.pname) a.dependencies;
                buildSystemNames = map (d: d.pname) a.build-system;
              };
          };
          mkShell = a: tool "shell" // { packageNames = map (p: p.name) a.packages; };
        } // lib.genAttrs [ "nox" "uv" "ruff" "podman" "buildah" "fuse-overlayfs" "btrfs-progs" ] tool;
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] pkgsFor;
    };
}
