"""The C-STORE SCU that delivers finished jobs to their destinations (`scu`), and C-ECHO.

Nothing is imported here: `dicomnode echo` needs pynetdicom, not the job table's SQLAlchemy
that sending a series records its progress in.
"""
