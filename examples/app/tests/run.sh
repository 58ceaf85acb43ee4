#!/bin/sh
# A tiny test suite that writes a JUnit report, as a real one would.
set -u
pass=0; fail=0; cases=""
check() { # name, command...
    name=$1; shift
    if "$@" >/dev/null 2>&1; then
        pass=$((pass + 1)); cases="$cases<testcase name=\"$name\"/>"
    else
        fail=$((fail + 1)); cases="$cases<testcase name=\"$name\"><failure message=\"failed\"/></testcase>"
    fi
}
check "index exists" test -s www/index.html
check "keepalive says ok" grep -qx ok www/keepalive
printf '<testsuite name="app" tests="%d" failures="%d">%s</testsuite>\n' $((pass + fail)) "$fail" "$cases" > report.xml
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
