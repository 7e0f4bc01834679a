# The packages of the nixsnake demo package set (NOT nixpkgs; see default.nix).
# `self` is the final package set (after overlays), so overlays can replace any package.
{ host, lib, release, system, config }:
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

  # R package stand-ins: attribute name (nixpkgs style, "." -> "_") = R name
  rPackageNames = [
    "ggplot2" "data.table" "dplyr" "tidyr" "readr" "tibble" "stringr" "purrr" "magrittr" "Rcpp"
    "jsonlite" "Matrix" "optparse" "BiocManager" "BiocGenerics" "S4Vectors" "IRanges"
    "GenomicRanges" "SummarizedExperiment" "DESeq2" "edgeR" "limma" "pheatmap" "RColorBrewer"
  ];
  mkRPackage = rName:
    let attr = replaceStrings [ "." ] [ "_" ] rName; in
    mkDrv {
      name = "r-${attr}-0.0.0-demo";
      script = ./builders/r-package.sh;
      env = { inherit rName; };
      passthru = { pname = attr; inherit rName; version = "0.0.0-demo"; };
      meta = demoMeta "stand-in for the R package ${rName} (NOT the real package)" { };
    };

  makeRWrapper = { packages ? [ ], ... }@args:
    let
      drv = mkDrv {
        name = "R-0.0.0-demo-wrapper";
        script = ./builders/r-wrapper.sh;
        env = {
          packagePaths = map toString packages;
          packageNames = concatStringsSep " " (map (p: p.pname or p.name) packages);
          shell = "${self.busybox}/bin/sh";
        };
        passthru = {
          inherit packages;
          recurseForDerivations = false;
        };
        meta = demoMeta "stand-in for R with packages (R cannot be built here; NOT R)" { mainProgram = "R"; };
      };
    in
    drv // {
      override = newArgs: makeRWrapper (args // (if builtins.isFunction newArgs then newArgs args else newArgs));
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

  bash = mkDrv {
    name = "bash-host-demo";
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
    meta = demoMeta "the host's bash re-linked onto the demo glibc (bin/sh links to it)" { license = lib.licenses.gpl3Plus; mainProgram = "bash"; };
  };
  bashInteractive = self.bash;

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
  python3 = self.python311 or (if pythonAttrs == { } then throw "nixsnake demo package set: no usable host python (3.10-3.13) was found"
    else pythonAttrs.${lib.last (attrNames pythonAttrs)});
  python3Minimal = self.python3;

  # ------------------------------------------------------------------ R (stand-ins)
  rPackages = listToAttrs (map (n: { name = replaceStrings [ "." ] [ "_" ] n; value = mkRPackage n; }) rPackageNames);
  rWrapper = makeRWrapper { packages = [ ]; };
  R = self.rWrapper;

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
} // pythonAttrs // pythonPackagesAttrs
