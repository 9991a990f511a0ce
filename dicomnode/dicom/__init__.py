"""DICOM-specific building blocks shared by the services (association set-up, later datasets)."""
