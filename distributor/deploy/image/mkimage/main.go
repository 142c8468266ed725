// Command mkimage writes the meshguard container image as an OCI image
// layout (`make image`). It needs no Docker daemon; push the layout with
// crane (`crane push build/image/oci REGISTRY/meshguard:TAG`).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/meshguard/meshguard/distributor/deploy/image"
)

func main() {
	var o image.Options
	bin := flag.String("binary", "", "static linux meshguard binary")
	out := flag.String("out", "build/image/oci", "OCI image layout directory (replaced)")
	epoch := flag.String("epoch", os.Getenv("SOURCE_DATE_EPOCH"), "Unix seconds for every timestamp (default $SOURCE_DATE_EPOCH)")
	flag.StringVar(&o.Arch, "arch", "amd64", "GOARCH of the binary")
	flag.StringVar(&o.Source, "source", "https://github.com/meshguard/meshguard", "org.opencontainers.image.source")
	flag.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision (the git commit)")
	flag.StringVar(&o.Version, "version", "", "org.opencontainers.image.version (and the layout's ref name)")
	flag.Parse()
	if err := run(&o, *bin, *out, *epoch); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(o *image.Options, bin, out, epoch string) error {
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return fmt.Errorf("--epoch %q: want Unix seconds (set SOURCE_DATE_EPOCH)", epoch)
	}
	o.Epoch = time.Unix(secs, 0)
	if o.Binary, err = os.ReadFile(bin); err != nil {
		return err
	}
	img, err := image.Build(*o)
	if err != nil {
		return err
	}
	d, err := image.WriteLayout(out, img, o.Version)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s\n", out, d)
	return nil
}
