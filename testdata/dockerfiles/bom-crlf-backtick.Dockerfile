# escape=`
FROM busybox AS base
RUN echo one `
    two

COPY <<EOF /greeting
hello
EOF
