// Our OCI registry for the realstack tests (main.go), built by ../../build.sh into
// bin/oci-registry. go-containerregistry at the version source-controller (go/flux/source)
// pulls OCI artifacts with, so both ends speak the same library.
module fluxgate.test/realstack/registry

go 1.26.0

require github.com/google/go-containerregistry v0.21.6
