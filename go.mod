module github.com/ringmesh/ringmesh

go 1.26.8
