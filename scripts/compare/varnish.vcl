# Varnish in front of `cachet origin`, for scripts/compare.sh. @ORIGIN_PORT@ is filled in at run
# time. Everything else is Varnish's built-in VCL: GET and HEAD without Authorization or Cookie are
# looked up and cached by the origin's Cache-Control (public, max-age=N), and concurrent misses
# for one object wait on its first fetch (the waiting list), which is Varnish's coalescing.
# Storage is malloc (varnishd -s malloc,256m): memory only.
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
}
