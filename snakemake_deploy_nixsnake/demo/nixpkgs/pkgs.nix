# The packages of the nixsnake demo package set (NOT nixpkgs; see default.nix).
# `self` is the final package set (after overlays), so overlays can replace any package.
{ host, lib, release, system, config, python3Version ? "3.11" }:
self:
let
  inherit (builtins) attrNames concatStringsSep filter hasAttr listToAttrs map replaceStrings;

  # ---- host files enter the store here, at evaluation time, never through a builder ----
  # builtins.path copies (content-addressed) what the filter keeps: one store path per host
  # directory holding just the named files. A changed host file is a new store path, so
  # every package made from it is rebuilt; builders only ever read /nix/store, which is
  # all nix's sandbox shows them.
  importFiles = label: files:
    let
      dirs = lib.unique (map (f: dirOf f.path) files);
      byDir = listToAttrs (map
        (d: {
          name = d;
          value = builtins.path {
            path = /. + d;
            name = "${label}-host-files";
            filter = p: _type: builtins.any (f: f.path == p) files;
          };
        })
        dirs);
    in
    map (f: { inherit (f) name; src = "${byDir.${dirOf f.path}}/${baseNameOf f.path}"; }) files;
  importFile = label: f: (builtins.head (importFiles label [ f ])).src;
  # "dest src" lines for the builders: dest relative to $out, src a store path
  fileLines = dir: imported: concatStringsSep "\n" (map (f: "${dir}${f.name} ${f.src}") imported);

  # A host Python's stdlib, without what nixpkgs also splits off or that only bloats
  # the closure (tests, tkinter, idle, site-packages: the env brings its own).
  stdlibSkipTop = [ "site-packages" "dist-packages" "test" "idlelib" "tkinter" "turtledemo" "ensurepip" "__phello__" ];
  stdlibSkipRe = "(config-[^/]*/(libpython[^/]*[.]a|python[.]o)|lib-dynload/_(tkinter|test|xxtestfuzz)[^/]*[.]so)";
  importStdlib = py:
    let root = py.stdlib; in
    builtins.path {
      path = /. + root;
      name = "python${py.pythonVersion}-stdlib-host";
      filter = p: type:
        let
          rel = builtins.substring (builtins.stringLength root + 1) (builtins.stringLength p) p;
          parts = filter builtins.isString (builtins.split "/" rel);
          base = baseNameOf p;
          depth = builtins.length parts;
        in
        !(depth == 1 && builtins.elem base stdlibSkipTop)
        && base != "__pycache__"
        && !(type == "directory" && depth >= 2 && builtins.elem base [ "test" "tests" "idle_test" ])
        && builtins.match stdlibSkipRe rel == null;
    };

  demoMeta = description: extra: {
    inherit description;
    longDescription = "nixsnake demo package set (not nixpkgs): ${description}";
    platforms = [ host.system ];
  } // extra;

  # Every demo derivation is built by the store copy of busybox' sh with an explicit PATH,
  # under `set -eu -o pipefail` (first line of each builder script): a failing step fails
  # the build instead of leaving a broken output in the store.
  mkDrv = { name, script, env ? { }, passthru ? { }, meta ? { } }:
    let
      drv = derivation ({
        inherit name system;
        builder = "${self.busybox}/bin/sh";
        args = [ "-eu" script ];
        PATH = "${self.busybox}/bin";
        busybox = self.busybox;
        allowSubstitutes = false;
        preferLocalBuild = true;
      } // env);
    in
    drv // passthru // { inherit meta passthru; };

  # nixpkgs refuses to evaluate unfree packages unless config.allowUnfree
  checkLicense = pkg:
    if (pkg.meta.license.free or true) || config.allowUnfree then pkg
    else throw ''
      Package ‘${pkg.name}’ in the nixsnake demo package set has an unfree license (‘${pkg.meta.license.shortName}’), refusing to evaluate.
      a) To temporarily allow unfree packages, you can use an environment variable: NIXPKGS_ALLOW_UNFREE=1 (not read by the demo)
      b) To allow unfree packages, set config.allowUnfree = true.'';

  # nixpkgs refuses to evaluate packages with meta.knownVulnerabilities unless
  # config.permittedInsecurePackages lists their name (or config.allowInsecurePredicate)
  checkInsecure = pkg:
    let
      issues = pkg.meta.knownVulnerabilities or [ ];
      permitted = builtins.elem pkg.name (config.permittedInsecurePackages or [ ])
        || (config.allowInsecurePredicate or (_: false)) pkg;
    in
    if issues == [ ] || permitted then pkg
    else throw ''
      Package ‘${pkg.name}’ in the nixsnake demo package set is marked as insecure, refusing to evaluate.

      Known issues:
      ${lib.concatMapStrings (i: " - ${i}\n") issues}
      You can install it anyway by allowing this package: add ‘${pkg.name}’ to
      permittedInsecurePackages in nixpkgs' config, like so:
        { permittedInsecurePackages = [ "${pkg.name}" ]; }'';

  glibcLib = "${self.glibc}/lib";
  loader = host.glibc.loader;
  anyGcc = builtins.any (p: p.needsGccLib or false) (builtins.attrValues host.pythons);

  busyboxTools = { pname, tools, required ? tools, aliases ? { }, description }:
    mkDrv {
      name = "${pname}-busybox-${host.busybox.version}";
      script = ./builders/tools.sh;
      env = {
        tools = concatStringsSep " " tools;
        required = concatStringsSep " " required;
        aliases = concatStringsSep "\n" (map (a: "${a}=${aliases.${a}}") (attrNames aliases));
      };
      passthru = { inherit pname; version = host.busybox.version; };
      meta = demoMeta description { license = lib.licenses.gpl2Plus; mainProgram = builtins.head tools; };
    };

  copyFiles = { name, files, rpath ? "", links ? "", patches ? null, check ? "", passthru ? { }, meta ? { } }:
    mkDrv {
      inherit name passthru meta;
      script = ./builders/copyfiles.sh;
      env = { inherit files rpath links check; patches = if patches == null then "" else patches; }
        // lib.optionalAttrs (rpath != "") { patchelf = "${self.patchelf}/bin/patchelf"; };
    };

  mkPython = info:
    let
      pv = info.pythonVersion;
      rpath = concatStringsSep ":" ([ glibcLib "${self.zlib}/lib" "${self.demoPythonDeps}/lib" ]
        ++ lib.optional (info.needsGccLib or false) "${self.gccLib}/lib");
      drv = mkDrv {
        name = "python3-${info.version}";
        script = ./builders/python.sh;
        env = {
          pythonVersion = pv;
          pythonFullVersion = info.version;
          stdlib = importStdlib info;
          exe = importFile "python${pv}" info.executable;
          libs = fileLines "lib/" (importFiles "python${pv}" (builtins.filter (f: f != null) [ info.libpython info.libpython3 ]));
          patchelf = "${self.patchelf}/bin/patchelf";
          glibc = self.glibc;
          inherit loader rpath;
          glibcCompat = "libpthread.so.0 libdl.so.2 librt.so.1 libutil.so.1";
          compileSkip = "(lib2to3/tests|/test/|/tests/data/)";
          PYTHONHASHSEED = "0";
        };
        passthru = {
          pname = "python3";
          version = info.version;
          pythonVersion = pv;
          sitePackages = "lib/python${pv}/site-packages";
          libPrefix = "python${pv}";
          executable = "python${pv}";
          interpreter = "${drv}/bin/python${pv}";
          implementation = "cpython";
          isPy3k = true;
          pythonAtLeast = v: builtins.compareVersions pv v >= 0;
          pythonOlder = v: builtins.compareVersions pv v < 0;
          # nixpkgs-style; the demo has no python package set, so `ps.<name>` is a missing attribute
          withPackages = f: self.buildEnv {
            name = "python3-${info.version}-env";
            paths = [ drv ] ++ f { };
          };
        };
        meta = demoMeta "CPython ${info.version} (host interpreter re-linked onto the demo glibc)" {
          license = lib.licenses.psfl; mainProgram = "python3";
        };
      };
    in
    drv;

  pythonAttrs = listToAttrs (map
    (pv: { name = "python" + replaceStrings [ "." ] [ "" ] pv; value = mkPython host.pythons.${pv}; })
    (attrNames host.pythons));

  # A two-package python package set per python (pythonXYZPackages.demo-greet needs
  # demo-base), laid out like nixpkgs' (lib/pythonX.Y/site-packages, dependencies in
  # nix-support/propagated-build-inputs), so importing nixpkgs python packages is testable.
  mkDemoPythonPackages = py:
    let
      sp = "lib/python${py.pythonVersion}/site-packages";
      base = self.runCommand "python${py.pythonVersion}-demo-base-1.0" { passthru.pythonModule = py; } ''
        mkdir -p $out/${sp}/demo_base
        echo 'WORD = "the demo package set"' > $out/${sp}/demo_base/__init__.py
      '';
      greet = self.runCommand "python${py.pythonVersion}-demo-greet-1.0" { passthru.pythonModule = py; } ''
        mkdir -p $out/${sp}/demo_greet $out/nix-support
        printf 'from demo_base import WORD\n\n\ndef greet():\n    return "hello from " + WORD\n' > $out/${sp}/demo_greet/__init__.py
        echo ${base} > $out/nix-support/propagated-build-inputs
      '';
    in
    { demo-base = base; demo-greet = greet; };
  pythonPackagesAttrs = listToAttrs (map (name: { name = "${name}Packages"; value = mkDemoPythonPackages pythonAttrs.${name}; }) (attrNames pythonAttrs));

  # ---- host packages: real tools from the host's Debian packages (demo/hostpkgs.py) ----
  # A group the host lacks is null in the manifest; its attributes throw, naming the
  # Debian packages to install (nixsnake turns the message into exit 69 with the hint).
  debianInfo = host.debian or { packages = { }; unavailable = { }; };
  unavailable = attr: throw ("nixsnake demo package set: ${attr} is not available on this host ("
    + (debianInfo.unavailable.${attr} or "not found") + "); install it with: apt-get install "
    + concatStringsSep " " (debianInfo.packages.${attr} or [ ]));
  hostGroup = attr: f: if (host.${attr} or null) == null then unavailable attr else f host.${attr};

  # a directory imported whole (but `exclude`), or exactly the files in `only` (and their
  # parent directories): the filter sees every path below `root`
  importTree = label: t:
    let
      n = builtins.stringLength t.root;
      toSet = l: listToAttrs (map (x: { name = x; value = true; }) l);
      excluded = toSet (t.exclude or [ ]);
      only = if t ? only then toSet t.only else null;
    in
    builtins.path {
      path = /. + t.root;
      name = "${label}-host-tree";
      filter = p: _type:
        let rel = builtins.substring (n + 1) (builtins.stringLength p) p; in
        !(excluded ? ${rel}) && (only == null || only ? ${rel});
    };

  # One host package (see builders/hostpkg.sh): `rpath` are the library directories its
  # ELF files need besides its own lib/ and the demo glibc, gcc runtime and zlib.
  mkHostPackage = { info, pname, version ? info.version, rpath ? [ ], propagated ? [ ], env ? { }, passthru ? { }, meta ? { } }:
    mkDrv {
      name = "${pname}-${version}-host-demo";
      script = ./builders/hostpkg.sh;
      env = {
        trees = concatStringsSep "\n" (map (t: "${t.dest} ${importTree pname t}") info.trees);
        files = fileLines "" (importFiles pname (map (f: { name = f.dest; inherit (f) path; }) info.files));
        libs = fileLines "lib/" (importFiles "${pname}-libs" info.libs);
        elfs = concatStringsSep "\n" info.elf;
        patches = if info.patches == [ ] then "" else builtins.toFile "${pname}-search-path-patches"
          (lib.concatMapStrings (p: "${p.file} ${toString p.offset} ${p.old} ${p.new}\n") info.patches);
        patchelf = "${self.patchelf}/bin/patchelf";
        interpreter = "${glibcLib}/${loader}";
        rpath = concatStringsSep ":" ([ "@out@/lib" ] ++ rpath ++ [ "${self.gccLib}/lib" "${self.zlib}/lib" glibcLib ]);
        propagated = map toString propagated;
      } // env;
      passthru = { inherit pname version; propagatedBuildInputs = propagated; debianPackages = info.debian; } // passthru;
      meta = demoMeta (meta.description or pname) (removeAttrs meta [ "description" ]);
    };
  debianNote = info: "Debian " + concatStringsSep ", " (lib.mapAttrsToList (p: v: "${p} ${v}") info.debian) + ", copied from the host";

  # dependencies of packages, transitively (nixpkgs: propagatedBuildInputs)
  propagatedClosure = pkgs: map (x: x.pkg) (builtins.genericClosure {
    startSet = map (p: { key = p.name; pkg = p; }) pkgs;
    operator = x: map (p: { key = p.name; pkg = p; }) (x.pkg.propagatedBuildInputs or [ ]);
  });

  # ---- R: Debian's R; rPackages.<name>: every R package the host has (Debian r-cran-*,
  # r-bioc-*, R's recommended packages); a few names of popular packages the host lacks
  # are stand-ins that say so when loaded. Attribute name: "." -> "_", as in nixpkgs.
  rHost = host.R or null;
  rAttr = replaceStrings [ "." ] [ "_" ];
  rHostPackages = host.rPackages or { };
  rRequired = map (a: builtins.substring 10 (builtins.stringLength a) a)
    (filter (a: lib.hasPrefix "rPackages." a) (attrNames debianInfo.packages));
  rStandinNames = [
    "ggplot2" "data.table" "dplyr" "tidyr" "readr" "tibble" "stringr" "purrr" "magrittr" "Rcpp"
    "jsonlite" "Matrix" "optparse" "BiocManager" "BiocGenerics" "S4Vectors" "IRanges"
    "GenomicRanges" "SummarizedExperiment" "DESeq2" "edgeR" "limma" "pheatmap" "RColorBrewer"
  ];
  mkRPackage = rName: info:
    let deps = map (d: self.rPackages.${rAttr d}) (info.deps ++ info.linkingTo); in
    mkHostPackage {
      info = info.package;
      pname = "r-${rAttr rName}";
      rpath = [ "${self.R}/lib/R/lib" "${self.R}/lib" ];
      propagated = deps;
      passthru = { pname = rAttr rName; inherit rName; };
      meta = { description = "the R package ${rName} ${info.package.version} (${debianNote info.package})"; };
    };
  mkRStandin = rName:
    mkDrv {
      name = "r-${rAttr rName}-0.0.0-demo-standin";
      script = ./builders/r-standin.sh;
      env = { inherit rName; R = self.R; rVersion = rHost.version; };
      passthru = { pname = rAttr rName; inherit rName; version = "0.0.0-demo-standin"; propagatedBuildInputs = [ ]; };
      meta = demoMeta "STAND-IN for the R package ${rName}: the host has no Debian package for it; loading it only says so (NOT the package)" { };
    };

  makeRWrapper = { packages ? [ ], ... }@args:
    let
      drv = mkDrv {
        name = "R-${self.R.version}-wrapper";
        script = ./builders/r-wrapper.sh;
        env = {
          R = self.R;
          packagePaths = map toString (propagatedClosure packages);
          packageNames = concatStringsSep " " (map (p: p.rName or p.pname or p.name) packages);
          shell = "${self.bash}/bin/bash";
        };
        passthru = {
          inherit packages;
          pname = "R";
          version = self.R.version;
          recurseForDerivations = false;
        };
        meta = demoMeta "R with packages (R_LIBS_SITE = the requested packages and their dependencies)" { mainProgram = "R"; };
      };
    in
    drv // {
      override = newArgs: makeRWrapper (args // (if builtins.isFunction newArgs then newArgs args else newArgs));
    };

  # ---- perl: Debian's perl; perlPackages.<nixpkgs name>: the Debian package with those
  # modules, one derivation per Debian package, dependencies propagated
  perlHost = host.perl or null;
  perlAttrOf = listToAttrs (map (a: { name = host.perlPackages.${a}; value = a; })
    (filter (a: host.perlPackages.${a} != null) (attrNames (host.perlPackages or { }))));
  perlLibs = lib.mapAttrs
    (deb: info:
      let deps = map (d: perlLibs.${d}) info.deps; in
      mkHostPackage {
        info = info.package;
        pname = "perl${perlHost.version}-${perlAttrOf.${deb} or deb}";
        rpath = [ "${self.perl}/lib" ];
        propagated = deps;
        passthru = { pname = perlAttrOf.${deb} or deb; perlModule = self.perl; debianPackage = deb; };
        meta = { description = "Perl modules of ${debianNote info.package}"; };
      })
    (host.perlLibs or { });
  perlLibDirs = pkgs: map (p: "${p}/lib/perl5/site_perl") (propagatedClosure pkgs)
    ++ map (d: "${self.perl}/${d}") perlHost.inc;
  perlWithPackages = f:
    let pkgs = f self.perlPackages; in
    mkDrv {
      name = "perl-${perlHost.version}-env";
      script = ./builders/perl-env.sh;
      env = {
        perl = self.perl;
        libDirs = concatStringsSep ":" (perlLibDirs pkgs);
        shell = "${self.busybox}/bin/sh";
      };
      passthru = { perl = self.perl; packages = pkgs; pname = "perl"; version = perlHost.version; };
      meta = demoMeta "perl with modules (PERL5LIB = the requested modules, their dependencies and perl's own library)" { mainProgram = "perl"; };
    };

  # stdenv subset: runCommand / mkDerivation run the generic builder under the demo bash
  basePath = lib.makeBinPath [
    self.coreutils self.findutils self.gnugrep self.gnused self.gawk self.gzip self.gnutar
    self.bzip2 self.xz self.which self.bash self.unzip
  ];
  mkGeneric = { name, env, passthru ? { }, meta ? { } }:
    let
      inputs = (env.nativeBuildInputs or [ ]) ++ (env.buildInputs or [ ])
        ++ (env.propagatedBuildInputs or [ ]) ++ (env.propagatedNativeBuildInputs or [ ]);
      drv = derivation ((removeAttrs env [ "passthru" "meta" ]) // {
        inherit name system;
        builder = "${self.bash}/bin/bash";
        args = [ "-eu" ./builders/generic-builder.sh ];
        demoBasePath = basePath;
        demoInputs = map toString (filter (x: x != null) inputs);
        allowSubstitutes = env.allowSubstitutes or false;
        preferLocalBuild = env.preferLocalBuild or true;
      });
    in
    drv // passthru // { inherit meta passthru; };

  writeTextFile = { name, text, executable ? false, destination ? "", checkPhase ? "", meta ? { }, ... }:
    mkDrv {
      inherit name meta;
      script = ./builders/text.sh;
      env = {
        inherit text destination checkPhase;
        executable = if executable then "1" else "";
        passAsFile = [ "text" ];
      };
    };

  buildEnv = { name, paths, pathsToLink ? [ "/" ], ignoreCollisions ? false, postBuild ? "", passthru ? { }, meta ? { }, ... }:
    mkDrv {
      inherit name passthru meta;
      script = ./builders/build-env.sh;
      env = {
        paths = map toString (filter (x: x != null) paths);
        inherit pathsToLink; # "/" becomes "" in the builder (sub=${sub%/})
        ignoreCollisions = if ignoreCollisions then "1" else "";
        inherit postBuild;
      };
    };
  mkBash = { name, description }: mkDrv {
    inherit name;
    script = ./builders/hostprog.sh;
    env = {
      exe = importFile "bash" host.bash.exe;
      exeName = "bash";
      deps = fileLines "" (importFiles "bash" host.bash.deps);
      links = "bin/sh bash";
      glibc = self.glibc;
      patchelf = "${self.patchelf}/bin/patchelf";
      inherit loader;
      check = ''[ "$("$out/bin/bash" -c 'x=$(echo ok | cat); cat <<EOF
$x
EOF')" = ok ]'';
    };
    passthru = { pname = "bash"; shellPath = "/bin/bash"; };
    meta = demoMeta description { license = lib.licenses.gpl3Plus; mainProgram = "bash"; };
  };

in
{
  inherit lib config system;
  demoRelease = release;
  # nixpkgs exposes these; a caller may look at them
  path = ./.;
  pkgs = self;
  buildPlatform = { inherit system; isLinux = true; };
  hostPlatform = self.buildPlatform;

  # ------------------------------------------------------------------ bootstrap
  busybox = derivation rec {
    name = "busybox-${host.busybox.version}";
    inherit system;
    # the host's static busybox, imported into the store; "busybox sh" runs the script
    # (busybox picks the applet from argv[0], so the file keeps its name)
    builder = importFile "busybox" host.busybox;
    args = [ "sh" "-eu" ./builders/busybox.sh ];
    hostBusybox = builder;
    allowSubstitutes = false;
    preferLocalBuild = true;
  } // {
    pname = "busybox";
    version = host.busybox.version;
    meta = demoMeta "static busybox (copied from the host)" { license = lib.licenses.gpl2Plus; };
  };

  # ------------------------------------------------------------------ small tools
  coreutils = busyboxTools {
    pname = "coreutils";
    description = "coreutils programs (busybox applets)";
    tools = [
      "[" "arch" "base64" "basename" "cat" "chgrp" "chmod" "chown" "chroot" "cksum" "comm" "cp"
      "cut" "date" "dd" "df" "dirname" "du" "echo" "env" "expand" "expr" "factor" "false" "fold"
      "groups" "head" "hostid" "id" "install" "link" "ln" "logname" "ls" "md5sum" "mkdir" "mkfifo"
      "mknod" "mktemp" "mv" "nice" "nl" "nohup" "nproc" "od" "paste" "printenv" "printf" "pwd"
      "readlink" "realpath" "rm" "rmdir" "seq" "sha1sum" "sha256sum" "sha512sum" "shred" "shuf"
      "sleep" "sort" "split" "stat" "stty" "sum" "sync" "tac" "tail" "tee" "test" "timeout"
      "touch" "tr" "true" "truncate" "tsort" "tty" "uname" "unexpand" "uniq" "unlink" "users"
      "wc" "who" "whoami" "yes"
    ];
    required = [ "cat" "cp" "ls" "mkdir" "mv" "rm" "ln" "echo" "env" "head" "tail" "sort" "wc" "tr" "test" "true" "false" "chmod" "readlink" "dirname" "basename" "sleep" "date" "uname" "id" ];
  };
  findutils = busyboxTools { pname = "findutils"; tools = [ "find" "xargs" ]; description = "find and xargs (busybox applets)"; };
  gnugrep = busyboxTools { pname = "gnugrep"; tools = [ "grep" "egrep" "fgrep" ]; required = [ "grep" ]; description = "grep (busybox applet)"; };
  gnused = busyboxTools { pname = "gnused"; tools = [ "sed" ]; description = "sed (busybox applet)"; };
  gawk = busyboxTools { pname = "gawk"; tools = [ "awk" ]; aliases = { gawk = "awk"; }; description = "awk (busybox applet; bin/gawk runs it)"; };
  which = busyboxTools { pname = "which"; tools = [ "which" ]; description = "which (busybox applet)"; };
  gzip = busyboxTools { pname = "gzip"; tools = [ "gzip" "gunzip" "zcat" ]; description = "gzip (busybox applets)"; };
  gnutar = busyboxTools { pname = "gnutar"; tools = [ "tar" ]; description = "tar (busybox applet)"; };
  bzip2 = busyboxTools { pname = "bzip2"; tools = [ "bzip2" "bunzip2" "bzcat" ]; description = "bzip2 (busybox applets)"; };
  xz = busyboxTools { pname = "xz"; tools = [ "xz" "unxz" "xzcat" "lzma" "unlzma" "lzcat" ]; required = [ "xz" "unxz" ]; description = "xz (busybox applets)"; };
  unzip = busyboxTools { pname = "unzip"; tools = [ "unzip" ]; description = "unzip (busybox applet)"; };
  procps = busyboxTools { pname = "procps"; tools = [ "ps" "free" "top" "uptime" "watch" "pidof" "kill" ]; required = [ "ps" ]; description = "ps and friends (busybox applets)"; };

  hello = mkDrv {
    name = "hello-2.12.1-demo";
    script = ./builders/hello.sh;
    env = { shell = "${self.busybox}/bin/sh"; version = "2.12.1-demo"; };
    passthru = { pname = "hello"; version = "2.12.1-demo"; };
    meta = demoMeta "prints Hello, world! (GNU hello's behaviour, as a script)" { license = lib.licenses.gpl3Plus; mainProgram = "hello"; };
  };

  # ------------------------------------------------------------------ host libraries
  glibc = copyFiles {
    name = "glibc-host-demo";
    files = fileLines "lib/" (importFiles "glibc" host.glibc.files);
    # the loader must not find host libraries: see default.nix ("glibc and LD_LIBRARY_PATH")
    # (a file in the store: the byte patches are data, not paths any builder reads)
    patches = builtins.toFile "glibc-loader-patches"
      (lib.concatMapStrings (p: "lib/${loader} ${toString p.offset} ${p.old} ${p.new}\n") host.glibc.loaderPatches);
    check = "\"$out/lib/${loader}\" --version > /dev/null";
    passthru = { pname = "glibc"; };
    meta = demoMeta "the host's glibc (shared libraries and loader)" { license = lib.licenses.lgpl21Plus; };
  };

  zlib = copyFiles {
    name = "zlib-host-demo";
    files = fileLines "lib/" (importFiles "zlib" [ host.zlib ]);
    rpath = glibcLib;
    links = "lib/libz.so libz.so.1";
    passthru = { pname = "zlib"; };
    meta = demoMeta "the host's zlib" { license = lib.licenses.zlib; };
  };

  # nixpkgs: stdenv.cc.cc.lib, gcc's runtime (libstdc++, libgcc_s, libgomp, ...)
  gccLib = copyFiles {
    name = "gcc-host-demo-lib";
    files = fileLines "lib/" (importFiles "gcc-lib" host.gccLib);
    rpath = "@out@/lib:${glibcLib}";
    passthru = { pname = "gcc-lib"; };
    meta = demoMeta "gcc's runtime libraries (libstdc++, libgcc_s) from the host" { license = lib.licenses.gpl3Plus; };
  };

  # the libraries the host pythons' extension modules link (openssl, libffi, sqlite, ...)
  demoPythonDeps = copyFiles {
    name = "python-host-libs-demo";
    files = fileLines "lib/" (importFiles "python-libs" host.pythonDeps);
    rpath = concatStringsSep ":" ([ "@out@/lib" glibcLib "${self.zlib}/lib" ] ++ lib.optional anyGcc "${self.gccLib}/lib");
    meta = demoMeta "libraries the host pythons need (openssl, libffi, sqlite, bzip2, xz, ncurses, ...)" { };
  };

  cacert = copyFiles {
    name = "nss-cacert-host-demo";
    files = "etc/ssl/certs/ca-bundle.crt ${importFile "cacert" host.cacert}";
    check = "[ -s \"$out/etc/ssl/certs/ca-bundle.crt\" ]";
    passthru = { pname = "nss-cacert"; };
    meta = demoMeta "CA certificate bundle (copied from the host)" { license = lib.licenses.mpl20; };
  };

  bash = mkBash { name = "bash-host-demo"; description = "the host's bash re-linked onto the demo glibc (bin/sh links to it)"; };
  # nixpkgs: bash has no readline (the one builders use); bashInteractive has it (the one
  # for people). The demo's are the same host bash (Debian's has readline built in) under
  # two names, so that what an image's shell is made from can be told apart.
  bashInteractive = mkBash { name = "bash-interactive-host-demo"; description = "the host's bash (interactive: readline) re-linked onto the demo glibc"; };

  # patchelf itself: the host's binary and its C++ runtime, re-linked onto the demo glibc
  # by running the imported copy once through the demo loader (the bootstrap step).
  patchelf = mkDrv {
    name = "patchelf-host-demo";
    script = ./builders/patchelf.sh;
    env = {
      exe = importFile "patchelf" host.patchelf.exe;
      deps = fileLines "" (importFiles "patchelf" host.patchelf.deps);
      glibc = self.glibc;
      inherit loader;
    };
    passthru = { pname = "patchelf"; };
    meta = demoMeta "the host's patchelf re-linked onto the demo glibc" { license = lib.licenses.gpl3Plus; mainProgram = "patchelf"; };
  };
  runtimeShell = "${self.bash}/bin/bash";

  # ------------------------------------------------------------------ stdenv and builders
  stdenv = {
    inherit system;
    isLinux = true;
    isDarwin = false;
    shell = "${self.bash}/bin/bash";
    hostPlatform = self.hostPlatform;
    buildPlatform = self.buildPlatform;
    cc = {
      isGNU = true;
      # nixpkgs' gcc-unwrapped; here only its runtime libraries exist, as `.lib`
      cc = self.gccLib // { lib = self.gccLib; };
    };
    mkDerivation = args:
      let
        name = args.name or "${args.pname}-${args.version}";
        passthru = (args.passthru or { }) // lib.optionalAttrs (args ? pname) { inherit (args) pname; }
          // lib.optionalAttrs (args ? version) { inherit (args) version; };
      in
      checkLicense (mkGeneric { inherit name passthru; env = args; meta = args.meta or { }; });
  };
  stdenvNoCC = self.stdenv;

  runCommand = name: env: buildCommand:
    mkGeneric { inherit name; env = env // { inherit buildCommand; }; passthru = env.passthru or { }; };
  runCommandLocal = self.runCommand;
  runCommandNoCC = self.runCommand;
  runCommandCC = self.runCommand;

  inherit writeTextFile buildEnv;
  writeText = name: text: writeTextFile { inherit name text; };
  writeTextDir = path: text: writeTextFile { name = baseNameOf path; inherit text; destination = "/${path}"; };
  writeScript = name: text: writeTextFile { inherit name text; executable = true; };
  writeScriptBin = name: text: writeTextFile { inherit name text; executable = true; destination = "/bin/${name}"; };
  writeShellScript = name: text: writeTextFile {
    inherit name; executable = true;
    text = "#!${self.runtimeShell}\n${text}";
  };
  writeShellScriptBin = name: text: writeTextFile {
    inherit name; executable = true; destination = "/bin/${name}";
    text = "#!${self.runtimeShell}\n${text}";
  };
  symlinkJoin = { name, paths, postBuild ? "", ... }@args:
    buildEnv { inherit name paths postBuild; ignoreCollisions = true; passthru = args.passthru or { }; };

  fetchurl = { url ? null, urls ? [ ], hash ? null, sha256 ? null, name ? null, executable ? false, ... }:
    let
      theUrl = if url != null then url else builtins.head urls;
      h = if hash != null then { outputHash = hash; outputHashAlgo = null; }
        else { outputHash = sha256; outputHashAlgo = "sha256"; };
    in
    # what <nix/fetchurl.nix> does (nix's builtin fetcher), without the <nix/...> lookup
    derivation ({
      name = if name != null then name else baseNameOf theUrl;
      builder = "builtin:fetchurl";
      system = "builtin";
      url = theUrl;
      urls = [ theUrl ];
      outputHashMode = if executable then "recursive" else "flat";
      inherit executable;
      unpack = false;
      preferLocalBuild = true;
      impureEnvVars = [ "http_proxy" "https_proxy" "ftp_proxy" "all_proxy" "no_proxy" ];
    } // (if h.outputHashAlgo == null then { inherit (h) outputHash; } else h));

  # ------------------------------------------------------------------ python
  # python3 is the commit's default Python (version.json, like nixpkgs' python3 of the
  # time), else python311, else the newest the host has
  python3 = self.${"python" + replaceStrings [ "." ] [ "" ] python3Version} or self.python311 or (
    if pythonAttrs == { } then throw "nixsnake demo package set: no usable host python (3.10-3.13) was found"
    else pythonAttrs.${lib.last (attrNames pythonAttrs)});
  python3Minimal = self.python3;

  # ------------------------------------------------------------------ bioinformatics tools (Debian)
  htslib = hostGroup "htslib" (info: mkHostPackage {
    inherit info;
    pname = "htslib";
    env.postInstall = "ln -s libhts.so.3 $out/lib/libhts.so";
    env.check = ''"$out/bin/bgzip" --version | grep -q htslib && "$out/bin/tabix" --version | grep -q htslib'';
    meta = { description = "htslib ${info.version}: bgzip, tabix, htsfile, libhts (${debianNote info}); no plugins (no remote files)"; license = lib.licenses.mit; mainProgram = "bgzip"; };
  });

  samtools = hostGroup "samtools" (info: mkHostPackage {
    inherit info;
    pname = "samtools";
    env.check = ''"$out/bin/samtools" --version | grep -q "^samtools ${info.version}"'';
    meta = { description = "samtools ${info.version} (${debianNote info})"; license = lib.licenses.mit; mainProgram = "samtools"; };
  });

  bcftools = hostGroup "bcftools" (info: mkHostPackage {
    inherit info;
    pname = "bcftools";
    env = {
      shell = "${self.busybox}/bin/sh";
      # bin/bcftools: the program with BCFTOOLS_PLUGINS = its plugins (bcftools +name)
      postInstall = ''
        cat > "$out/bin/bcftools" <<END
        #!$shell
        BCFTOOLS_PLUGINS="\''${BCFTOOLS_PLUGINS:-$out/libexec/bcftools}"
        export BCFTOOLS_PLUGINS
        exec "$out/bin/.bcftools-wrapped" "\$@"
        END
        chmod 0555 "$out/bin/bcftools"
      '';
      check = ''"$out/bin/bcftools" --version | grep -q "^bcftools ${info.version}" && "$out/bin/bcftools" plugin -l | grep -q fill-tags'';
    };
    meta = { description = "bcftools ${info.version} with its plugins (${debianNote info})"; license = lib.licenses.mit; mainProgram = "bcftools"; };
  });

  # ------------------------------------------------------------------ R (Debian's)
  R = hostGroup "R" (info: mkHostPackage {
    info = info.package;
    pname = "R";
    rpath = [ "@out@/lib/R/lib" ];
    env = {
      bash = self.bash;
      busybox = self.busybox;
      postInstallScript = ./builders/r.sh;
      check = ''
        export HOME="$PWD"
        [ "$("$out/bin/Rscript" -e 'cat(R.home())')" = "$out/lib/R" ]
        "$out/bin/Rscript" -e 'f <- file.path(tempdir(), "x.pdf"); pdf(f); plot(1:3); invisible(dev.off()); stopifnot(readChar(f, 5) == "%PDF-")'
        [ "$(echo 'cat(6 * 7)' | "$out/bin/R" --vanilla --no-echo)" = 42 ]
      '';
    };
    passthru = { basePackages = info.basePackages; };
    meta = { description = "R ${info.version} (${debianNote info.package}); no X11, Tk, cairo or internet module"; license = lib.licenses.gpl2Plus; mainProgram = "R"; };
  });
  rPackages =
    listToAttrs (map (n: { name = rAttr n; value = if rHost == null then unavailable "R" else mkRStandin n; })
      (filter (n: !(rHostPackages ? ${n}) && !(builtins.elem n rRequired)) rStandinNames))
    // listToAttrs (map (n: { name = rAttr n; value = unavailable "rPackages.${n}"; })
      (filter (n: !(rHostPackages ? ${n})) rRequired))
    // listToAttrs (map (n: { name = rAttr n; value = mkRPackage n rHostPackages.${n}; }) (attrNames rHostPackages));
  rWrapper = makeRWrapper { packages = [ ]; };

  # ------------------------------------------------------------------ perl (Debian's)
  perl = hostGroup "perl" (info: mkHostPackage {
    info = info.package;
    pname = "perl";
    env = {
      shell = "${self.busybox}/bin/sh";
      perlInc = concatStringsSep " " info.inc;
      perlVersion = info.version;
      postInstallScript = ./builders/perl.sh;
    };
    passthru = {
      libPrefix = "lib/perl5/site_perl";
      withPackages = perlWithPackages;
      pkgs = self.perlPackages;
    };
    meta = { description = "perl ${info.version} (${debianNote info.package})"; license = lib.licenses.artistic1; mainProgram = "perl"; };
  });
  perlPackages = lib.mapAttrs (attr: deb: if deb == null then unavailable "perlPackages.${attr}" else perlLibs.${deb})
    (host.perlPackages or { }) // { perl = self.perl; };

  # ------------------------------------------------------------------ CUDA (unfree stand-in)
  cudaPackages = {
    cudatoolkit = checkLicense (mkDrv {
      name = "cudatoolkit-0.0.0-demo";
      script = ./builders/text.sh;
      env = {
        text = "nixsnake demo stand-in for the (unfree) CUDA toolkit; it contains nothing else.\n";
        passAsFile = [ "text" ];
        destination = "/README";
      };
      passthru = { pname = "cudatoolkit"; version = "0.0.0-demo"; };
      meta = demoMeta "unfree stand-in for the CUDA toolkit (only exists to exercise config.allowUnfree)" {
        license = lib.licenses.unfree;
      };
    });
  };

  # ==================================================================================
  # nixpkgs shapes nixsnake has to handle (what a first build against the real nixpkgs
  # meets; see docs/demo-package-set.md, "Shapes of the real nixpkgs")
  # ==================================================================================

  # python3Packages is python3's package set; every python package says which
  # interpreter it was built for (nixpkgs: passthru.pythonModule, set by
  # buildPythonPackage / toPythonModule; applications have none)
  python3Packages = self.${"python" + replaceStrings [ "." ] [ "" ] self.python3.pythonVersion + "Packages"};

  # A library with several outputs whose FIRST output is `bin` (nixpkgs: glib, curl,
  # openssl, libtiff, cyrus_sasl, ...): "${libdemo}" is the bin output, which has no lib/;
  # the library is in `out` (lib.getLib / lib.makeLibraryPath find it). Like opencv or
  # mpi it takes config.cudaSupport: the flag changes its derivation (a rebuild).
  # lib/libdemo.so.1 is a copy of the demo zlib (a loadable library under another name).
  libdemo = derivation {
    name = "libdemo-1.0-demo";
    inherit system;
    outputs = [ "bin" "out" "dev" ];
    builder = "${self.busybox}/bin/sh";
    args = [ "-eu" ./builders/libdemo.sh ];
    PATH = "${self.busybox}/bin";
    zlib = self.zlib;
    cudaSupport = if config.cudaSupport or false then "1" else "";
    allowSubstitutes = false;
    preferLocalBuild = true;
  } // {
    pname = "libdemo";
    version = "1.0-demo";
    meta = demoMeta "a library whose first output is bin (lib/ is in out): lib/libdemo.so.1 (a copy of zlib)" { license = lib.licenses.zlib; };
  };

  # A package nixpkgs refuses to evaluate because of known vulnerabilities unless
  # config.permittedInsecurePackages names it ("name-version"), with a message worded
  # like nixpkgs' check-meta.nix. A STAND-IN: it contains a README, no OpenSSL.
  openssl_1_1 = checkInsecure (mkDrv {
    name = "openssl-1.1.1w";
    script = ./builders/text.sh;
    env = {
      text = "nixsnake demo stand-in for an insecure package (OpenSSL 1.1); it contains nothing else.\n";
      passAsFile = [ "text" ];
      destination = "/README";
    };
    passthru = { pname = "openssl"; version = "1.1.1w"; };
    meta = demoMeta "STAND-IN for an insecure package (only exists to exercise config.permittedInsecurePackages)" {
      license = lib.licenses.free;
      knownVulnerabilities = [ "OpenSSL 1.1 reached its end of life on 2023-09-11 (demo stand-in)" ];
    };
  });
} // pythonAttrs // pythonPackagesAttrs
